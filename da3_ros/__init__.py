"""da3_ros: ROS 2 (rclpy) nodes around da3_core. The only package here that imports rclpy and *_msgs."""
