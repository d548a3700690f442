"""Collaborative rewards for L_CRR."""

from .mf import MatrixFactorizationReward, most_popular_scores
from .protocol import RewardContext, RewardFn
from .reward_fns import CatalogRewardFn, ScoreMatrix, load_score_matrix, score_matrix_reward_fn
from .token_rewards import node_scores, token_rewards

__all__ = [
    "CatalogRewardFn",
    "MatrixFactorizationReward",
    "RewardContext",
    "RewardFn",
    "ScoreMatrix",
    "load_score_matrix",
    "most_popular_scores",
    "node_scores",
    "score_matrix_reward_fn",
    "token_rewards",
]
