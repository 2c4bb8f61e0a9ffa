//! The training loop, AdamW, schedules, evaluation and checkpoints; filled by the trainer issue (#6).
