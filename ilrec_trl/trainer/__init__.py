from .ilrec_config import ILRecConfig
from .ilrec_trainer import ILRecTrainer
from .recommender_mixin import RecommenderTrainerMixin, RecSFTTrainer
from .request import ILRecRequest

__all__ = ["ILRecConfig", "ILRecRequest", "ILRecTrainer", "RecSFTTrainer", "RecommenderTrainerMixin"]
