import sys

from vit_perception.cli import main

sys.exit(main())
