use super::*;
use crate::schedule::SchedulerType;

const MIN: &str = r#"
task = "classification"
model = "m"
[data]
train = "t.jsonl"
"#;

#[test]
fn defaults_are_hf_training_arguments() {
    let c = RunConfig::from_toml(MIN, &[], "x").unwrap();
    let t = &c.training;
    assert_eq!(t.learning_rate, 5e-5);
    assert_eq!(
        (t.adam_beta1, t.adam_beta2, t.adam_epsilon),
        (0.9, 0.999, 1e-8)
    );
    assert_eq!(t.max_grad_norm, 1.0);
    assert_eq!(t.num_train_epochs, 3.0);
    assert_eq!(t.lr_scheduler_type, SchedulerType::Linear);
    assert_eq!(t.best_metric(), "eval_loss");
    assert!(!t.greater_is_better());
}

#[test]
fn overrides_parse_as_toml_or_string() {
    let c = RunConfig::from_toml(
        MIN,
        &[
            "training.learning_rate=3e-5".into(),
            "seed=7".into(),
            "data.pair_column=#2 String".into(),
            "training.metric_for_best_model=accuracy".into(),
        ],
        "x",
    )
    .unwrap();
    assert_eq!(c.training.learning_rate, 3e-5);
    assert_eq!(c.training.seed, 7);
    assert_eq!(c.data.pair_column.as_deref(), Some("#2 String"));
    assert!(c.training.greater_is_better());
}

#[test]
fn partial_sections_take_defaults() {
    let with = |task: &str, section: &str| {
        let text = MIN.replace("\"classification\"", &format!("{task:?}"));
        RunConfig::from_toml(&format!("{text}{section}"), &[], "x").unwrap()
    };
    let TaskConfig::Mlm { mlm } = with("mlm", "[mlm]\nwhole_word = true\n").task else {
        panic!("not mlm")
    };
    assert!(mlm.whole_word);
    assert_eq!((mlm.mlm_probability, mlm.next_probability), (0.15, 0.5));
    let TaskConfig::ChunkClassification { chunking } =
        with("chunk_classification", "[chunking]\nchunk_size = 126\n").task
    else {
        panic!("not chunk_classification")
    };
    assert_eq!((chunking.chunk_size, chunking.stride), (126, 510));
    assert_eq!(chunking.pool, berth_model::Pool::Mean);
    assert_eq!(chunking.chunk_group_size, None);
    // Multi-label reads long texts with a [chunking] section, short ones without.
    let multi = |section: &str| with("multi_label_classification", section).task;
    let TaskConfig::MultiLabelClassification { chunking, .. } =
        multi("[chunking]\nchunk_group_size = 4\ntrain_chunks_per_doc = 2\n")
    else {
        panic!("not multi-label")
    };
    let chunking = chunking.expect("chunked");
    assert_eq!(
        (chunking.chunk_group_size, chunking.train_chunks_per_doc),
        (Some(4), Some(2))
    );
    let TaskConfig::MultiLabelClassification { chunking, .. } = multi("") else {
        panic!("not multi-label")
    };
    assert!(chunking.is_none());
    let e = RunConfig::from_toml(
        &MIN.replace("\"classification\"", "\"chunk_classification\""),
        &["chunking.chunk_group_size=0".into()],
        "c.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("chunking.chunk_group_size must be at least 1"),
        "{e}"
    );
    // A task without its section takes the section's defaults.
    assert_eq!(
        with("nsp", "").task,
        TaskConfig::Nsp {
            mlm: MlmConfig::default()
        }
    );
}

#[test]
fn another_tasks_section_or_an_unknown_key_is_refused() {
    let e = RunConfig::from_toml(&format!("{MIN}[mlm]\nwhole_word = true\n"), &[], "c.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.toml") && e.contains("'mlm'") && e.contains("classification"),
        "{e}"
    );
    let e = RunConfig::from_toml(&format!("modle = \"x\"\n{MIN}"), &[], "c.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("'modle'"), "{e}");
    let e = RunConfig::from_toml(MIN, &["task=\"tagging\"".into()], "c.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tagging"), "{e}");
    let e = RunConfig::from_toml(MIN, &["device=\"gpu\"".into()], "c.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("gpu"), "{e}");
}

#[test]
fn a_task_section_error_names_its_key_and_old_default_sections_are_read_past() {
    let chunk = MIN.replace("\"classification\"", "\"chunk_classification\"");
    let e = RunConfig::from_toml(&chunk, &["chunking.pool=\"avg\"".into()], "c.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.toml") && e.contains("`chunking.pool`"), "{e}");
    let e = RunConfig::from_toml(&chunk, &["chunking.chunk_size=\"big\"".into()], "c.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`chunking.chunk_size`"), "{e}");
    // What Berth wrote before sections were per task: every section, defaults.
    let old = format!(
        "{MIN}[chunking]\nchunk_size = 510\nstride = 510\nmin_chunk_len = 1\npool = \"mean\"\n[mlm]\nmlm_probability = 0.15\nwhole_word = false\nnext_probability = 0.5\n"
    );
    assert_eq!(
        RunConfig::from_toml(&old, &[], "old.toml").unwrap().task,
        TaskConfig::Classification {}
    );
    // A section that says something is still refused.
    let e = RunConfig::from_toml(
        &old.replace("whole_word = false", "whole_word = true"),
        &[],
        "old.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("'mlm'"), "{e}");
}

#[test]
fn transformers_spellings_are_read() {
    let c = RunConfig::from_toml(
        MIN,
        &[
            "evaluation_strategy=\"epoch\"".into(),
            "warmup_steps=0.1".into(),
            "bf16=true".into(),
            "use_cpu=true".into(),
        ],
        "x",
    )
    .unwrap();
    let t = &c.training;
    assert_eq!(t.eval_strategy(), Strategy::Epoch);
    assert_eq!((t.warmup_ratio, t.warmup_steps), (0.1, 0));
    assert_eq!(t.precision, Precision::Bf16);
    assert_eq!(t.device, DeviceSpec::Cpu);
    let c = RunConfig::from_toml(MIN, &["warmup_steps=10.0".into()], "x").unwrap();
    assert_eq!(c.training.warmup_steps, 10);
    assert_eq!(
        RunConfig::from_toml(MIN, &[], "x").unwrap().training.device,
        DeviceSpec::Auto
    );
    for bad in ["warmup_steps=2.5", "bf16=\"yes\""] {
        let e = RunConfig::from_toml(MIN, &[bad.into()], "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.toml") && e.contains(bad.split('=').next().unwrap()),
            "{e}"
        );
    }
    let e = RunConfig::from_toml(
        MIN,
        &["use_cpu=true".into(), "device=\"cuda\"".into()],
        "c.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("disagree"), "{e}");
}

#[test]
fn a_written_config_reads_back_the_same() {
    let text = MIN.replace("\"classification\"", "\"chunk_classification\"");
    let c = RunConfig::from_toml(
        &text,
        &[
            "chunking.pool=\"max\"".into(),
            "device=\"cuda:1\"".into(),
            "precision=\"bf16\"".into(),
            "eval_strategy=\"epoch\"".into(),
        ],
        "x",
    )
    .unwrap();
    let back = RunConfig::from_toml(&c.to_toml().unwrap(), &[], "written").unwrap();
    assert_eq!(back.task, c.task);
    assert_eq!(back.training.device, DeviceSpec::Cuda(1));
    assert_eq!(back.training.precision, Precision::Bf16);
    assert_eq!(back.training.eval_strategy(), Strategy::Epoch);
    assert_eq!(c.task.name(), "chunk_classification");
}

#[test]
fn every_shipped_config_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            RunConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert_eq!(n, 5);
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    let e = RunConfig::from_toml(MIN, &["training.learnin_rate=1".into()], "cfg.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cfg.toml") && e.contains("learnin_rate"), "{e}");
    let e = RunConfig::from_toml(MIN, &["lr_scheduler_type=wavy".into()], "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("wavy"), "{e}");
    let e = RunConfig::from_toml(MIN, &["eval_strategy=sometimes".into()], "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sometimes"), "{e}");
    let e = RunConfig::from_toml(MIN, &["data.hub_config=\"mrpc\"".into()], "x")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data.hub_config") && e.contains("data.hub"),
        "{e}"
    );
    let hub = |format: &str| {
        RunConfig::from_toml(
            MIN,
            &[
                "data.hub=\"nyu-mll/glue\"".into(),
                format!("data.format={format:?}"),
            ],
            "x",
        )
    };
    assert!(hub("parquet").is_ok());
    let e = hub("tsv").unwrap_err().to_string();
    assert!(e.contains("data.format") && e.contains("parquet"), "{e}");
}
