"""The prediction/feedback log: what was served, and the true outcomes sent back later."""

from dataflywheel.feedback.log import (
    FeedbackResult,
    FeedbackRow,
    IdempotencyConflict,
    LogWriter,
    PredictionRecord,
    PredictionRow,
    new_id,
)

__all__ = ["FeedbackResult", "FeedbackRow", "IdempotencyConflict", "LogWriter", "PredictionRecord",
           "PredictionRow", "new_id"]
