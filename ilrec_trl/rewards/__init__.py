"""Collaborative rewards for L_CRR."""

from .protocol import RewardContext, RewardFn

__all__ = ["RewardContext", "RewardFn"]
