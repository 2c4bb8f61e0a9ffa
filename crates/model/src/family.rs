//! The encoder families Berth trains, chosen by `config.json`'s `model_type`, and the
//! HF architecture names of their heads.

use serde::{Deserialize, Serialize};

/// An encoder family (transformers' `model_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    #[default]
    #[serde(rename = "bert")]
    Bert,
    #[serde(rename = "roberta")]
    Roberta,
    #[serde(rename = "xlm-roberta")]
    XlmRoberta,
    #[serde(rename = "camembert")]
    Camembert,
    #[serde(rename = "distilbert")]
    DistilBert,
    #[serde(rename = "electra")]
    Electra,
}

/// What a model has on top of its encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// The bare encoder (`BertModel`, `RobertaModel`, ...).
    Base,
    SequenceClassification,
    MaskedLm,
    /// BERT's MLM + next-sentence prediction.
    PreTraining,
}

impl HeadKind {
    fn suffix(self) -> &'static str {
        match self {
            HeadKind::Base => "Model",
            HeadKind::SequenceClassification => "ForSequenceClassification",
            HeadKind::MaskedLm => "ForMaskedLM",
            HeadKind::PreTraining => "ForPreTraining",
        }
    }
}

impl Family {
    /// Every family, in the order errors list them.
    pub const ALL: [Family; 6] = [
        Family::Bert,
        Family::Roberta,
        Family::XlmRoberta,
        Family::Camembert,
        Family::DistilBert,
        Family::Electra,
    ];

    /// The family of `model_type`, or an error naming the supported ones.
    pub fn from_model_type(model_type: &str) -> Result<Family, String> {
        Family::ALL
            .into_iter()
            .find(|f| f.model_type() == model_type)
            .ok_or_else(|| {
                format!(
                    "model_type '{model_type}' is not supported by Berth; it trains {}",
                    Family::ALL.map(Family::model_type).join(", ")
                )
            })
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::XlmRoberta => "xlm-roberta",
            Family::Camembert => "camembert",
            Family::DistilBert => "distilbert",
            Family::Electra => "electra",
        }
    }

    /// The name of the encoder inside a head model (`bert` in `bert.embeddings...`).
    pub fn weight_prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta | Family::XlmRoberta | Family::Camembert => "roberta",
            Family::DistilBert => "distilbert",
            Family::Electra => "electra",
        }
    }

    /// The start of its transformers class names.
    fn class_prefix(self) -> &'static str {
        match self {
            Family::Bert => "Bert",
            Family::Roberta => "Roberta",
            Family::XlmRoberta => "XLMRoberta",
            Family::Camembert => "Camembert",
            Family::DistilBert => "DistilBert",
            Family::Electra => "Electra",
        }
    }

    /// The slow tokenizer class transformers names in `tokenizer_config.json`.
    pub fn tokenizer_class(self) -> &'static str {
        match self {
            Family::Bert => "BertTokenizer",
            Family::Roberta => "RobertaTokenizer",
            Family::XlmRoberta => "XLMRobertaTokenizer",
            Family::Camembert => "CamembertTokenizer",
            Family::DistilBert => "DistilBertTokenizer",
            Family::Electra => "ElectraTokenizer",
        }
    }

    /// Whether transformers has this head for the family (and Berth builds it).
    pub fn has_head(self, head: HeadKind) -> bool {
        match head {
            HeadKind::Base | HeadKind::SequenceClassification => true,
            // An ELECTRA discriminator has no MLM head (its generator is another model).
            HeadKind::MaskedLm => self != Family::Electra,
            HeadKind::PreTraining => self == Family::Bert,
        }
    }

    /// The transformers architecture of `head` on this family, e.g.
    /// `RobertaForSequenceClassification`.
    pub fn architecture(self, head: HeadKind) -> String {
        format!("{}{}", self.class_prefix(), head.suffix())
    }

    /// The (family, head) an `architectures` entry names, if Berth knows it.
    pub fn parse_architecture(name: &str) -> Option<(Family, HeadKind)> {
        Family::ALL.into_iter().find_map(|f| {
            let rest = name.strip_prefix(f.class_prefix())?;
            [
                HeadKind::Base,
                HeadKind::SequenceClassification,
                HeadKind::MaskedLm,
                HeadKind::PreTraining,
            ]
            .into_iter()
            .find(|h| h.suffix() == rest)
            .map(|h| (f, h))
        })
    }

    /// Whether the family's positions count from `pad_token_id + 1` (RoBERTa's
    /// `create_position_ids_from_input_ids`), so `pad_token_id + 1` positions are
    /// never used.
    pub fn positions_after_padding(self) -> bool {
        matches!(
            self,
            Family::Roberta | Family::XlmRoberta | Family::Camembert
        )
    }

    /// The readable name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "BERT",
            Family::Roberta => "RoBERTa",
            Family::XlmRoberta => "XLM-RoBERTa",
            Family::Camembert => "CamemBERT",
            Family::DistilBert => "DistilBERT",
            Family::Electra => "ELECTRA",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_round_trip_and_distilbert_is_not_bert() {
        for f in Family::ALL {
            for h in [
                HeadKind::Base,
                HeadKind::SequenceClassification,
                HeadKind::MaskedLm,
                HeadKind::PreTraining,
            ] {
                assert_eq!(Family::parse_architecture(&f.architecture(h)), Some((f, h)));
            }
        }
        assert_eq!(
            Family::parse_architecture("DistilBertForMaskedLM"),
            Some((Family::DistilBert, HeadKind::MaskedLm))
        );
        assert_eq!(
            Family::parse_architecture("XLMRobertaForSequenceClassification"),
            Some((Family::XlmRoberta, HeadKind::SequenceClassification))
        );
        assert_eq!(Family::parse_architecture("BertForQuestionAnswering"), None);
    }

    #[test]
    fn an_unknown_model_type_names_the_supported_ones() {
        let e = Family::from_model_type("deberta-v2").unwrap_err();
        assert!(
            e.contains("'deberta-v2'")
                && e.contains("bert, roberta, xlm-roberta, camembert, distilbert, electra"),
            "{e}"
        );
    }
}
