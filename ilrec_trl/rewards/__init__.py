"""Collaborative rewards for L_CRR: reward models (MF, SASRec), reward functions over the catalogue trie, and
`build_reward`, which fits or loads the one the CLI asks for."""

from .build import REWARD_MODELS, build_reward
from .candidates import CandidateRewardFn, FactorCandidates, TopItems, candidate_token_rewards
from .mf import MatrixFactorizationReward, most_popular_scores
from .persistence import dataset_fingerprint
from .protocol import RewardContext, RewardFn
from .reward_fns import CatalogRewardFn, ScoreMatrix, check_scores, load_score_matrix, score_matrix_reward_fn
from .sasrec import SASRecReward
from .token_rewards import node_scores, token_rewards

__all__ = [
    "REWARD_MODELS",
    "CandidateRewardFn",
    "CatalogRewardFn",
    "FactorCandidates",
    "MatrixFactorizationReward",
    "RewardContext",
    "RewardFn",
    "SASRecReward",
    "TopItems",
    "ScoreMatrix",
    "build_reward",
    "candidate_token_rewards",
    "check_scores",
    "dataset_fingerprint",
    "load_score_matrix",
    "most_popular_scores",
    "node_scores",
    "score_matrix_reward_fn",
    "token_rewards",
]
