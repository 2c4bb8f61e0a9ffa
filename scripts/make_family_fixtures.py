"""Writes crates/model/tests/fixtures/families/: for every encoder family Berth trains,
a tiny random-init model of each of its heads saved by transformers' own
`save_pretrained`, a tiny tokenizer trained by `tokenizers`' trainers (WordPiece,
byte-level BPE or Unigram, as the family's hub models use), and the reference outputs
of transformers: logits (dropout off, f32) and the gradient of every parameter for one
training step, so the Rust tests need no torch.

    /path/to/venv/bin/python scripts/make_family_fixtures.py   # torch + transformers

Every tensor is drawn at random, biases and norm weights too (transformers' init
leaves them at 0 and 1, which would hide a skipped bias or a misnamed norm). Each
family's specifics are exercised: ELECTRA's embedding projection (embedding_size 8,
hidden 16), RoBERTa's positions counted over non-pad tokens (a padded batch),
DistilBERT's names and missing token types.

`tokenizers`' WordPiece and Unigram trainers order tied tokens differently from run
to run, so a rerun rewrites those tokenizers and every file that depends on them;
each run's files are consistent with each other.

Layout, per family: tokenizer.json (and the slow files: vocab.txt, or vocab.json +
merges.txt), slow_ids.json (ids transformers' tokenizer built from the slow files
gives), and per head a directory with config.json, model.safetensors (and for the
sequence classifier the same weights as pytorch_model.bin) and
expected.safetensors (input_ids, attention_mask, token_type_ids, labels, logits,
loss, next_sentence_label and seq_relationship_logits for pre-training, and
grad.<name> for every parameter).
"""

import json
import os
import shutil
import sys
import zlib

import torch
import transformers as T
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "../crates/model/tests/fixtures/families")
CORPUS = os.path.join(HERE, "../../shared/data/meditations/meditations.txt")
TEXTS = [
    "The soul becomes dyed with the colour of its thoughts.",
    ("You have power over your mind,", "not outside events. Realize this."),
]
SLOW_TEXTS = ["Waste no more time arguing what a good man should be; be one!", "Ünïcode  and   spaces\ttoo."]


def lines():
    with open(CORPUS, encoding="utf-8") as f:
        return [l.strip() for l in f if l.strip()][:3000]


def wordpiece(corpus):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def bpe(corpus):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def unigram(corpus):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        corpus, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    return tok


COMMON = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32, hidden_act="gelu")
ROBERTA = dict(COMMON, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
FAMILIES = {
    "bert": (T.BertConfig, dict(COMMON, max_position_embeddings=64), wordpiece, "Bert", ["seqcls", "mlm", "pretraining"]),
    "roberta": (T.RobertaConfig, ROBERTA, bpe, "Roberta", ["seqcls", "mlm"]),
    "xlm-roberta": (T.XLMRobertaConfig, ROBERTA, unigram, "XLMRoberta", ["seqcls", "mlm"]),
    "camembert": (T.CamembertConfig, ROBERTA, unigram, "Camembert", ["seqcls", "mlm"]),
    "distilbert": (
        T.DistilBertConfig,
        dict(dim=16, n_layers=2, n_heads=4, hidden_dim=32, max_position_embeddings=64, activation="gelu"),
        wordpiece,
        "DistilBert",
        ["seqcls", "mlm"],
    ),
    "electra": (T.ElectraConfig, dict(COMMON, embedding_size=8, max_position_embeddings=64), wordpiece, "Electra", ["seqcls"]),
}
HEADS = {"seqcls": "ForSequenceClassification", "mlm": "ForMaskedLM", "pretraining": "ForPreTraining"}


def batch(tok, family):
    encs = [tok.encode(t) if isinstance(t, str) else tok.encode(*t) for t in TEXTS]
    pad = tok.token_to_id("[PAD]") if tok.token_to_id("[PAD]") is not None else tok.token_to_id("<pad>")
    width = max(len(e.ids) for e in encs)
    ids = [e.ids + [pad] * (width - len(e.ids)) for e in encs]
    mask = [[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in encs]
    types = [e.type_ids + [0] * (width - len(e.ids)) for e in encs]
    if family in ("roberta", "xlm-roberta", "camembert"):
        types = [[0] * width for _ in encs]
    return torch.tensor(ids), torch.tensor(mask), torch.tensor(types)


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.3
            norm_weight = name.endswith("weight") and ("LayerNorm" in name or "layer_norm" in name)
            p.copy_(noise + (1.0 if norm_weight else 0.0))


def make(family, config_cls, kwargs, tok, prefix, head, out):
    config = config_cls(vocab_size=tok.get_vocab_size(), **kwargs)
    if head == "seqcls":
        config.id2label = {0: "neg", 1: "neu", 2: "pos"}
        config.label2id = {"neg": 0, "neu": 1, "pos": 2}
    cls = getattr(T, prefix + HEADS[head])
    torch.manual_seed(0)
    model = cls(config)
    randomize(model, seed=zlib.crc32(f"{family}/{head}".encode()))
    model.eval()  # dropout off: logits and gradients are deterministic
    ids, mask, types = batch(tok, family)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if family != "distilbert":
        inputs["token_type_ids"] = types
    if head == "seqcls":
        labels = torch.tensor([0, 2])
        out_ = model(**inputs, labels=labels)
    else:
        # Two scored positions per row, the rest ignored (-100).
        labels = torch.full_like(ids, -100)
        labels[0, 1], labels[0, 3], labels[1, 2], labels[1, 4] = ids[0, 1], 7, ids[1, 2], 11
        extra = {"next_sentence_label": torch.tensor([0, 1])} if head == "pretraining" else {}
        out_ = model(**inputs, labels=labels, **extra)
    out_.loss.backward()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    if head == "seqcls":
        # The PyTorch pickle transformers 4 wrote (safe_serialization=False) and older
        # hub repos still ship; transformers 5 reads it but no longer writes it.
        torch.save(model.state_dict(), os.path.join(out, "pytorch_model.bin"))
    logits = out_.logits if head != "pretraining" else out_.prediction_logits
    tensors = {
        "input_ids": ids.to(torch.int64).contiguous(),
        "attention_mask": mask.to(torch.int64).contiguous(),
        "token_type_ids": types.to(torch.int64).contiguous(),
        "labels": labels.to(torch.int64).contiguous(),
        "logits": logits.detach().contiguous(),
        "loss": out_.loss.detach().reshape(1),
    }
    if head == "pretraining":
        tensors["seq_relationship_logits"] = out_.seq_relationship_logits.detach().contiguous()
        tensors["next_sentence_label"] = extra["next_sentence_label"]
    # A tied decoder is named as the word embeddings it shares (what Berth names it,
    # and the name save_pretrained keeps).
    names = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in names or "word_embeddings" in name:
            names[id(p)] = name
    for p in model.parameters():
        tensors["grad." + names[id(p)]] = p.grad.detach().clone().contiguous()
    save_file(tensors, os.path.join(out, "expected.safetensors"))
    print(f"{family}/{head}: {sum(p.numel() for p in model.parameters())} parameters, loss {out_.loss.item():.4f}")


def slow_ids(family, dir_):
    """Ids of transformers' tokenizer built from the slow files alone (a directory with
    only them and a tokenizer_config.json naming the class), as from_pretrained
    converts them."""
    import tempfile

    files = {"bert": ["vocab.txt"], "roberta": ["vocab.json", "merges.txt"]}[family]
    config = {"bert": {"tokenizer_class": "BertTokenizer", "do_lower_case": True},
              "roberta": {"tokenizer_class": "RobertaTokenizer"}}[family]
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            shutil.copy(os.path.join(dir_, f), tmp)
        json.dump(config, open(os.path.join(tmp, "tokenizer_config.json"), "w"))
        tok = T.AutoTokenizer.from_pretrained(tmp)
        ids = [tok(t)["input_ids"] for t in SLOW_TEXTS]
        pair = tok(SLOW_TEXTS[0], SLOW_TEXTS[1])["input_ids"]
        json.dump({"texts": SLOW_TEXTS, "ids": ids, "pair_ids": pair, "class": type(tok).__name__},
                  open(os.path.join(dir_, "slow_ids.json"), "w"), indent=1)


def main():
    if "--slow-ids-only" in sys.argv:
        for family in ("bert", "roberta"):
            slow_ids(family, os.path.join(ROOT, family))
        return
    corpus = lines()
    shutil.rmtree(ROOT, ignore_errors=True)
    tokenizers = {}
    for family, (config_cls, kwargs, make_tok, prefix, heads) in FAMILIES.items():
        key = make_tok.__name__
        if key not in tokenizers:
            tokenizers[key] = make_tok(corpus)
        tok = tokenizers[key]
        fdir = os.path.join(ROOT, family)
        os.makedirs(fdir, exist_ok=True)
        tok.save(os.path.join(fdir, "tokenizer.json"))
        if family in ("bert", "roberta"):
            tok.model.save(fdir)
            slow_ids(family, fdir)
        for head in heads:
            make(family, config_cls, kwargs, tok, prefix, head, os.path.join(fdir, head))


if __name__ == "__main__":
    main()
