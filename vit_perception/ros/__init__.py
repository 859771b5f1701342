"""Everything that imports rclpy or ROS messages lives in this subpackage."""
