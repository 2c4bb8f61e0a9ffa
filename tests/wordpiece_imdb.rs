//! berth-wordpiece gives `tokenizers`' ids on all 50,000 IMDB reviews (train and test),
//! with special tokens, with the MiniLM fixture's tokenizer.json; and the tokenize op
//! picks it for that file.

use berth_data::arrow::array::{Array, StringArray};
use berth_data::{Backend, LoadOptions, TokenizeConfig, TokenizeOp, load_parquet};
use berth_wordpiece::{EncodeOptions, WordPiece};

#[test]
fn all_imdb_reviews_get_tokenizers_ids() {
    let (Some(data), Some(model)) = (berth_testkit::data_dir(), berth_testkit::minilm_dir()) else {
        return;
    };
    let mut hf =
        berth_data::tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    hf.with_padding(None);
    hf.with_truncation(None).unwrap();
    let wp = WordPiece::from_file(&model.join("tokenizer.json")).unwrap();
    assert_eq!(
        TokenizeOp::new(&hf, TokenizeConfig::new("text"))
            .unwrap()
            .backend(),
        Backend::WordPiece
    );
    let opts = EncodeOptions::default();
    let mut reviews = 0;
    let mut tokens = 0;
    for split in ["train", "test"] {
        let path = data.join(format!("imdb/{split}.parquet"));
        let ds = load_parquet(path.to_str().unwrap(), &LoadOptions::in_memory()).unwrap();
        for batch in ds.batches() {
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let texts: Vec<&str> = (0..col.len()).map(|i| col.value(i)).collect();
            let ours = wp.encode_batch(&texts, None, &opts).unwrap();
            let theirs = hf.encode_batch_fast(texts.clone(), true).unwrap();
            for (i, e) in theirs.iter().enumerate() {
                assert_eq!(
                    ours.row(i),
                    e.get_ids(),
                    "{split} review {}: {:?}",
                    reviews + i,
                    texts[i]
                );
                tokens += e.get_ids().len();
            }
            reviews += texts.len();
        }
    }
    assert_eq!(reviews, 50_000);
    println!("{reviews} IMDB reviews, {tokens} ids, identical");
}
