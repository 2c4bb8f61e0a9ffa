//! A trainable candle BERT with Hugging Face-compatible weights and heads; filled by the model issue (#5).
