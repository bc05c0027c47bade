"""rclpy nodes of ceed_vla_ros: thin ROS 2 wrappers around the ROS-free core."""
