"""bag_player: publish a rosbag2's messages on their topics at the recorded rate, so the live node runs as on a robot.

::

    python -m da3_ros.bag_player BAG [--rate 1.0] [--clock] [--topics T ...] [--remap OLD:=NEW ...]
                                     [--start-delay S] [--wait-subscribers S]

``--wait-subscribers S`` waits (at most S seconds) until every played topic and /clock has a subscriber.

Each message's CDR bytes are published as they are (``publisher.publish(bytes)``: no deserialisation), at
``start + (log_time - first_log_time) / rate`` on a monotonic clock. With ``--clock``, ``/clock``
(rosgraph_msgs/Clock) carries the bag time (published before every message and at ``--clock-hz`` while waiting),
so a node started with ``use_sim_time:=true`` sees the recorded stamps as "now". No looping; exits when done; Ctrl-C
stops it cleanly. Bags recorded with ROS 2 Humble types play on newer distros: sensor_msgs Image / CompressedImage /
CameraInfo, geometry_msgs and tf2_msgs definitions are unchanged, so the CDR bytes are the same (only the newer type
hashes are added in metadata).

With a ROS 2 install the equivalent is::

    ros2 bag play BAG --clock [--rate 1.0] [--topics /camera/image_raw /camera/camera_info] \\
        [--remap /camera/image_raw:=/image]
    ros2 launch da3_ros reconstruct.launch.py use_sim_time:=true   # in another terminal

Type modules are imported from the installed message packages (``sensor_msgs.msg.Image`` ...); a topic whose type
is not installed is skipped with a warning.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from da3_ros import bags

__all__ = ["load_msg_class", "parse_remaps", "play", "main"]


def load_msg_class(msgtype: str):
    """'pkg/msg/Name' -> the ROS 2 Python message class."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def parse_remaps(remaps: list[str] | None) -> dict[str, str]:
    out = {}
    for r in remaps or []:
        old, sep, new = r.partition(":=")
        if not sep or not old or not new:
            raise ValueError(f"bad remap {r!r}: use OLD:=NEW")
        out[old] = new
    return out


def play(bag: str, rate: float = 1.0, clock: bool = False, topics: list[str] | None = None,
         remaps: dict[str, str] | None = None, start_delay_s: float = 0.0, wait_subscribers_s: float = 0.0,
         clock_hz: float = 40.0, qos_depth: int = 100, log=print) -> int:
    """Play ``bag``; returns the number of messages published. Raises KeyboardInterrupt through (caller)."""
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from rosgraph_msgs.msg import Clock

    from da3_ros.conversions import ns_to_stamp

    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    info = bags.bag_info(bag)
    selected = [t for t in info.topics.values() if topics is None or t.name in topics]
    missing = set(topics or ()) - set(info.topics)
    if missing:
        raise ValueError(f"topics not in the bag: {', '.join(sorted(missing))}; it has {', '.join(info.topics)}")
    remaps = remaps or {}
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("da3_bag_player")
    published = 0
    try:
        pubs = {}
        for t in selected:
            try:
                cls = load_msg_class(t.msgtype)
            except (ImportError, AttributeError, ValueError):
                log(f"skipping {t.name}: message type {t.msgtype} is not installed")
                continue
            latched = t.name == "/tf_static"
            qos = QoSProfile(depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            pubs[t.name] = node.create_publisher(cls, remaps.get(t.name, t.name), qos)
        clock_pub = node.create_publisher(Clock, "/clock", 10) if clock else None
        if wait_subscribers_s > 0:
            deadline = time.monotonic() + wait_subscribers_s
            waiting = list(pubs.values()) + ([clock_pub] if clock_pub is not None else [])
            while time.monotonic() < deadline and not all(p.get_subscription_count() for p in waiting):
                time.sleep(0.02)
        if start_delay_s > 0:
            time.sleep(start_delay_s)
        log(f"playing {info.path}: {sum(info.topics[t].count for t in pubs)} messages on {len(pubs)} topics at "
            f"rate {rate:g}{' with /clock' if clock else ''}")
        t_start = time.monotonic()
        first = None
        period = 1.0 / clock_hz if clock_hz > 0 else None
        for topic, _, stamp, data in bags.read_raw(bag, list(pubs)):
            if first is None:
                first = stamp
            target = t_start + (stamp - first) / 1e9 / rate
            while True:  # wait, keeping /clock going
                now = time.monotonic()
                if now >= target:
                    break
                if clock_pub is not None and period is not None:
                    sim = first + int((now - t_start) * rate * 1e9)
                    clock_pub.publish(Clock(clock=ns_to_stamp(sim)))
                    time.sleep(min(period, target - now))
                else:
                    time.sleep(target - now)
            if clock_pub is not None:
                clock_pub.publish(Clock(clock=ns_to_stamp(stamp)))
            pubs[topic].publish(data)
            published += 1
        time.sleep(0.2)  # let the last messages leave before the publishers go away
        log(f"done: {published} messages in {time.monotonic() - t_start:.2f} s")
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return published


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="da3_bag_player", description="Publish a rosbag2 at its recorded rate.")
    ap.add_argument("bag")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    ap.add_argument("--clock", action="store_true", help="publish /clock with the bag time (use_sim_time)")
    ap.add_argument("--clock-hz", type=float, default=40.0)
    ap.add_argument("--topics", nargs="+", default=None, help="only these topics")
    ap.add_argument("--remap", action="append", default=[], metavar="OLD:=NEW")
    ap.add_argument("--start-delay", type=float, default=0.0, help="seconds to wait before playing")
    ap.add_argument("--wait-subscribers", type=float, default=0.0,
                    help="wait up to this many seconds until every played topic (and /clock) has a subscriber")
    a = ap.parse_args(argv)
    try:
        play(a.bag, a.rate, a.clock, a.topics, parse_remaps(a.remap), a.start_delay, a.wait_subscribers, a.clock_hz)
    except ValueError as exc:
        print(f"bag_player: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bag_player: interrupted", file=sys.stderr)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
