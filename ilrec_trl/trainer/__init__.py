from .ilrec_config import ILRecConfig
from .ilrec_trainer import CONTEXT_KEY, ContextCollator, ILRecTrainer
from .recommender_mixin import RecommenderTrainerMixin, RecSFTTrainer
from .request import ILRecRequest

__all__ = ["CONTEXT_KEY", "ContextCollator", "ILRecConfig", "ILRecRequest", "ILRecTrainer", "RecSFTTrainer",
           "RecommenderTrainerMixin"]
