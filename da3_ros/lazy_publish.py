"""Lazy publishing: a message is built only when some subscription is matched to its publisher.

Volatile topics (depth, confidence, poses, window clouds, window results) are skipped outright while nobody listens:
a subscriber that joins later could not have received the skipped messages anyway. Latched (transient-local) topics
(the map cloud and the path) are marked stale instead and published as soon as a subscriber appears, so a late
joiner still gets the latest state. A bag recorder or ``ros2 topic echo`` counts as a subscriber.
"""

from __future__ import annotations

__all__ = ["listened"]


def listened(publisher) -> bool:
    """Whether any subscription is matched to ``publisher`` now (rclpy ``Publisher.get_subscription_count``)."""
    return publisher.get_subscription_count() > 0
