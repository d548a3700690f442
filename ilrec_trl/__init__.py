"""ilrec-trl: ILRec (self-hard negatives from intermediate layers) for LLM recommenders, on top of Hugging Face TRL."""

__version__ = "0.1.0"

from .artifact import RecommenderConfig
from .catalog import CatalogProtocol, ItemCatalog
from .losses import ILRecLossOutput, ILRecLossParams, ilrec_loss, ilrec_losses
from .rewards.protocol import RewardContext, RewardFn
from .recommender import Recommender
from .trainer import ILRecConfig, ILRecTrainer, RecSFTTrainer

__all__ = [
    "CatalogProtocol",
    "ILRecConfig",
    "ILRecLossOutput",
    "ILRecLossParams",
    "ILRecTrainer",
    "ItemCatalog",
    "RecSFTTrainer",
    "Recommender",
    "RecommenderConfig",
    "RewardContext",
    "RewardFn",
    "ilrec_loss",
    "ilrec_losses",
]
