"""pip install . — the ROS-free parts (training, evaluation, export, benchmark) and the CLI.

On a robot the package is built by colcon (package.xml, CMakeLists.txt); this file serves
workstations without ROS. The node's rclpy imports stay inside vit_perception.ros.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
ns: dict = {}
exec((HERE / "vit_perception" / "_version.py").read_text(), ns)


def requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    reqs = (ln.split("#", 1)[0].strip() for ln in lines)
    return [r for r in reqs if r]


setup(
    name="vit-perception",
    version=ns["__version__"],
    description="ViT/Swin + DETR detection and DINO features for ROS 2, trainer and evaluator",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vit_perception", "vit_perception.*"]),
    data_files=[
        ("share/vit_perception/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/vit_perception/config/models", glob("config/models/*.yaml")),
        ("share/vit_perception/launch", glob("launch/*.py")),
    ],
    install_requires=["torch>=2.2", "torchvision>=0.17", *requirements("requirements.txt")],
    extras_require={"dev": requirements("requirements-dev.txt")},
    entry_points={
        "console_scripts": [
            "vit-perception = vit_perception.cli:main",
            "perception_node = vit_perception.ros.perception_node:main",
        ]
    },
)
