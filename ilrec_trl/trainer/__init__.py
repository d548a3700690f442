from .ilrec_config import ILRecConfig
from .ilrec_trainer import ILRecTrainer

__all__ = ["ILRecConfig", "ILRecTrainer"]
