"""da3_ros: ament_python package (also installable with pip). Ships da3_core (no ROS) and da3_ros (nodes)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "da3_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["da3_core", "da3_core.*", "da3_ros", "da3_ros.*"]),
    package_data={"da3_core": ["assets/default/*"]},  # the embedded default weights (safetensors, config, log)
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="da3-ros developers",
    maintainer_email="dev@da3-ros.local",
    description="Depth Anything 3 for ROS 2: multi-view depth, camera poses and maps from image streams.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "da3 = da3_core.cli:main",
            "reconstruct = da3_ros.reconstruct_node:main",
            "synthetic_camera = da3_ros.synthetic_camera:main",
            "da3_make_bag = da3_ros.make_bag:main",
            "da3_replay = da3_ros.replay:main",
            "da3_bag_player = da3_ros.bag_player:main",
        ],
    },
)
