"""Content and secure hashes of a model snapshot (SPEC §3), over the protocol's file set.

Two file sets (`HashRules.file_set`):

- ``allowed`` (ours): the allowed files at the top of the snapshot folder
  (`files.ALLOWED_FILE_PATTERNS`), i.e. exactly what a validator downloads; anything else in
  the folder (caches, README, the miner's scratch files) is ignored.
- ``reference``: exactly the files the reference's download fetches, i.e. what
  transformers 4.48.3's `AutoModelForCausalLM.from_pretrained(use_safetensors=True)` and
  `AutoTokenizer.from_pretrained` ask the Hub for and find (`reference_files`). Worked out
  from the files themselves, without importing transformers: the tokenizer tables below are
  data taken from that version.

Either way the files are taken in sorted order of their names (Python string order = Unicode
code points, the order of the reference's `os.walk` over a flat folder) and read in 1 MiB
chunks, so multi-GiB shards hash in constant memory.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from finetune.errors import ModelRejected
from finetune.protocol import NEXT
from finetune.storage.files import allowed_files_in, is_allowed_file, read_small_json, sha256_file

# -- transformers 4.48.3 tokenizer facts ------------------------------------------------------
# Every tokenizer class `AutoTokenizer` can find by name (the values of TOKENIZER_MAPPING_NAMES
# in models/auto/tokenization_auto.py, with sentencepiece and tokenizers installed, as the
# reference's requirements have them, plus PreTrainedTokenizerFast), grouped by the file
# names of the class's `vocab_files_names`. Listed here by hand from that version.
_VOCAB_FILES: dict[str, str] = {
    "": "ByT5Tokenizer CanineTokenizer PerceiverTokenizer",
    "artists.json genres.json lyrics.json": "JukeboxTokenizer",
    "bpe.codes vocab.txt": "BertweetTokenizer PhobertTokenizer",
    "byte_maps.json": "MyT5Tokenizer",
    "dict.txt sentencepiece.bpe.model": "BartphoTokenizer",
    "emoji.json vocab.txt": "GPTNeoXJapaneseTokenizer GPTSanJapaneseTokenizer",
    "entity_vocab.json merges.txt vocab.json": "LukeTokenizer",
    "entity_vocab.json sentencepiece.bpe.model": "MLukeTokenizer",
    "merges.txt normalizer.json tokenizer.json vocab.json": "WhisperTokenizer WhisperTokenizerFast",
    "merges.txt tokenizer.json vocab.json": (
        "BartTokenizerFast CLIPTokenizerFast CodeGenTokenizerFast DebertaTokenizerFast "
        "GPT2TokenizerFast GPTNeoXTokenizerFast HerbertTokenizerFast LEDTokenizerFast "
        "LayoutLMv3TokenizerFast LongformerTokenizerFast MvpTokenizerFast "
        "OpenAIGPTTokenizerFast Qwen2TokenizerFast RobertaTokenizerFast"
    ),
    "merges.txt tokenizer_config.json vocab.json": (
        "BlenderbotSmallTokenizer BlenderbotTokenizer BlenderbotTokenizerFast Speech2Text2Tokenizer"
    ),
    "merges.txt vocab-src.json vocab-tgt.json": "FSMTTokenizer",
    "merges.txt vocab.json": (
        "BartTokenizer BioGptTokenizer CLIPTokenizer CTRLTokenizer ClvpTokenizer CodeGenTokenizer "
        "DebertaTokenizer FlaubertTokenizer GPT2Tokenizer HerbertTokenizer LEDTokenizer "
        "LayoutLMv3Tokenizer LongformerTokenizer MvpTokenizer OpenAIGPTTokenizer Qwen2Tokenizer "
        "RobertaTokenizer TapexTokenizer XLMTokenizer"
    ),
    "prophetnet.tokenizer": "ProphetNetTokenizer XLMProphetNetTokenizer",
    "sentencepiece.bpe.model": (
        "BarthezTokenizer CamembertTokenizer LayoutXLMTokenizer MBart50Tokenizer MBartTokenizer "
        "NllbTokenizer SeamlessM4TTokenizer XGLMTokenizer XLMRobertaTokenizer"
    ),
    "sentencepiece.bpe.model tokenizer.json": (
        "BarthezTokenizerFast CamembertTokenizerFast LayoutXLMTokenizerFast MBart50TokenizerFast "
        "MBartTokenizerFast NllbTokenizerFast PLBartTokenizer SeamlessM4TTokenizerFast "
        "XGLMTokenizerFast XLMRobertaTokenizerFast"
    ),
    "sentencepiece.bpe.model tokenizer_config.json vocab.json": "M2M100Tokenizer",
    "sentencepiece.bpe.model vocab.json": "Speech2TextTokenizer",
    "sentencepiece.bpe.model vocab.txt": "ErnieMTokenizer",
    "sentencepiece.model": "RemBertTokenizer",
    "sentencepiece.model tokenizer.json": "RemBertTokenizerFast",
    "source.spm target.spm target_vocab.json tokenizer_config.json vocab.json": "MarianTokenizer",
    "spiece.model": (
        "AlbertTokenizer BertGenerationTokenizer BigBirdTokenizer CpmTokenizer FNetTokenizer "
        "GPTSw3Tokenizer MT5Tokenizer PegasusTokenizer ReformerTokenizer SiglipTokenizer "
        "T5Tokenizer XLNetTokenizer"
    ),
    "spiece.model tokenizer.json": (
        "AlbertTokenizerFast BigBirdTokenizerFast FNetTokenizerFast MT5TokenizerFast "
        "PegasusTokenizerFast ReformerTokenizerFast T5TokenizerFast UdopTokenizer "
        "UdopTokenizerFast XLNetTokenizerFast"
    ),
    "spiece.model vocab.txt": "BertJapaneseTokenizer",
    "spm.model": "DebertaV2Tokenizer",
    "spm.model tokenizer.json": "DebertaV2TokenizerFast",
    "spm_char.model": "SpeechT5Tokenizer",
    "tokenizer.json": "BloomTokenizerFast CohereTokenizerFast",
    "tokenizer.json tokenizer.model": (
        "CodeLlamaTokenizerFast CpmTokenizerFast GemmaTokenizerFast LlamaTokenizerFast "
        "PreTrainedTokenizerFast"
    ),
    "tokenizer.json vocab.txt": (
        "BertTokenizerFast DPRQuestionEncoderTokenizer DPRQuestionEncoderTokenizerFast "
        "DistilBertTokenizerFast ElectraTokenizerFast FunnelTokenizerFast LayoutLMTokenizerFast "
        "LayoutLMv2TokenizerFast LxmertTokenizerFast MPNetTokenizerFast MobileBertTokenizerFast "
        "RealmTokenizerFast RetriBertTokenizerFast RoFormerTokenizerFast SqueezeBertTokenizerFast"
    ),
    "tokenizer.model": "CodeLlamaTokenizer GemmaTokenizer LlamaTokenizer",
    "tokenizer_config.json vocab.json": "Wav2Vec2CTCTokenizer Wav2Vec2PhonemeCTCTokenizer",
    "vocab.json": "MgpstrTokenizer VitsTokenizer",
    "vocab.txt": (
        "BertTokenizer ConvBertTokenizer ConvBertTokenizerFast CpmAntTokenizer DistilBertTokenizer "
        "ElectraTokenizer EsmTokenizer FunnelTokenizer LayoutLMTokenizer LayoutLMv2Tokenizer "
        "LxmertTokenizer MPNetTokenizer MobileBertTokenizer RealmTokenizer RetriBertTokenizer "
        "RoFormerTokenizer SplinterTokenizer SplinterTokenizerFast SqueezeBertTokenizer "
        "TapasTokenizer"
    ),
}
TOKENIZER_VOCAB_FILES: dict[str, tuple[str, ...]] = {
    name: tuple(files.split()) for files, names in _VOCAB_FILES.items() for name in names.split()
}
# Classes whose files we cannot reproduce: RagTokenizer loads two tokenizers from sub-folders,
# TransfoXLTokenizer reads a pickle (vocab.pkl).
_UNSUPPORTED_TOKENIZERS = frozenset({"RagTokenizer", "TransfoXLTokenizer"})

# The class `AutoTokenizer` picks from config.json's `model_type` when no `tokenizer_class` is
# named (TOKENIZER_MAPPING: the fast class when there is one), for every model type that
# 4.48.3's AutoModelForCausalLM loads; a type missing here has no tokenizer in that version.
_MODEL_TYPE_TOKENIZERS: dict[str, str] = {
    "BartTokenizerFast": "bart",
    "BertGenerationTokenizer": "bert-generation",
    "BertTokenizerFast": "bert ernie git megatron-bert qdqbert",
    "BigBirdTokenizerFast": "big_bird",
    "BioGptTokenizer": "biogpt",
    "BlenderbotSmallTokenizer": "blenderbot-small",
    "BlenderbotTokenizerFast": "blenderbot",
    "BloomTokenizerFast": "bloom",
    "CTRLTokenizer": "ctrl",
    "CamembertTokenizerFast": "camembert",
    "CodeGenTokenizerFast": "codegen phi",
    "CohereTokenizerFast": "cohere cohere2",
    "CpmAntTokenizer": "cpmant",
    "ElectraTokenizerFast": "electra",
    "GPT2TokenizerFast": "dbrx emu3 gpt-sw3 gpt2 gpt_bigcode gpt_neo gptj opt starcoder2",
    "GPTNeoXJapaneseTokenizer": "gpt_neox_japanese",
    "GPTNeoXTokenizerFast": (
        "falcon_mamba gpt_neox mamba mamba2 mpt olmo olmo2 olmoe rwkv stablelm"
    ),
    "GemmaTokenizerFast": "gemma gemma2 recurrent_gemma",
    "LlamaTokenizerFast": (
        "code_llama diffllama jamba jetmoe llama mistral mixtral mllama persimmon phi3 phimoe zamba"
    ),
    "MBartTokenizerFast": "mbart",
    "MarianTokenizer": "marian",
    "MvpTokenizerFast": "mvp",
    "OpenAIGPTTokenizerFast": "openai-gpt",
    "PLBartTokenizer": "plbart",
    "PegasusTokenizerFast": "bigbird_pegasus pegasus",
    "PreTrainedTokenizerFast": "falcon glm moshi",
    "ProphetNetTokenizer": "prophetnet",
    "Qwen2TokenizerFast": "qwen2 qwen2_moe",
    "ReformerTokenizerFast": "reformer",
    "RemBertTokenizerFast": "rembert",
    "RoCBertTokenizer": "roc_bert",
    "RoFormerTokenizerFast": "roformer",
    "RobertaTokenizerFast": "data2vec-text mega roberta roberta-prelayernorm",
    "Speech2Text2Tokenizer": "speech_to_text_2",
    "T5TokenizerFast": "musicgen musicgen_melody",
    "TransfoXLTokenizer": "transfo-xl",
    "WhisperTokenizerFast": "whisper",
    "XGLMTokenizerFast": "xglm",
    "XLMProphetNetTokenizer": "xlm-prophetnet",
    "XLMRobertaTokenizerFast": "xlm-roberta xlm-roberta-xl xmod",
    "XLMTokenizer": "xlm",
    "XLNetTokenizerFast": "xlnet",
}
MODEL_TYPE_TOKENIZER: dict[str, str] = {
    model_type: name for name, types in _MODEL_TYPE_TOKENIZERS.items() for model_type in types.split()
}
_KNOWN_TOKENIZERS = frozenset(TOKENIZER_VOCAB_FILES) | _UNSUPPORTED_TOKENIZERS
_TRANSFORMERS_VERSION = "4.48.3"
# Files every tokenizer class asks for besides its vocabulary (PreTrainedTokenizerBase).
_TOKENIZER_EXTRAS = ("added_tokens.json", "special_tokens_map.json", "tokenizer_config.json",
                     "chat_template.jinja")  # fmt: skip
_VERSIONED_TOKENIZER = re.compile(r"tokenizer\.(.*)\.json")


def _unsupported(name: str, why: str) -> ModelRejected:
    return ModelRejected(
        f"the reference's download would fetch {name!r} ({why}), which this validator does not "
        "download",
        reason="unsupported_file",
        file=name,
    )


def reference_weight_files(folder: str | Path) -> list[str]:
    """The weight files the reference loads: model.safetensors if present (shards and index
    then ignored), else the index and every shard it names.

    Raises:
        ModelRejected: `unsafe_files` (neither file), `bad_config` (an index that does not
            parse or lacks `weight_map`/`metadata`), `missing_weights` (a named shard is
            absent), `unsupported_file` (a shard name we never download).
    """
    root = Path(folder)
    if (root / "model.safetensors").is_file():
        return ["model.safetensors"]
    index = root / "model.safetensors.index.json"
    if not index.is_file():
        raise ModelRejected(
            "no model.safetensors or model.safetensors.index.json", reason="unsafe_files"
        )
    try:
        data = read_small_json(index)
    except ValueError as exc:
        raise ModelRejected(f"{index.name} does not parse: {str(exc)[:200]}", reason="bad_config") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if (
        not isinstance(weight_map, dict)
        or not all(isinstance(v, str) for v in weight_map.values())
        or not isinstance(data.get("metadata"), dict)
    ):
        raise ModelRejected(
            f"{index.name} needs a `weight_map` of file names and a `metadata` object",
            reason="bad_config",
        )
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not is_allowed_file(shard) or not shard.endswith(".safetensors"):
            raise _unsupported(shard, "a shard named by the index")
        if not (root / shard).is_file():
            raise ModelRejected(f"{index.name} names {shard}, which is missing", reason="missing_weights")
    return [index.name, *shards]


def _tokenizer_class(tokenizer_config: dict, config: dict) -> str | None:
    """The class `AutoTokenizer` instantiates, or None where it raises instead."""
    name = tokenizer_config.get("tokenizer_class")
    if name is None:
        name = config.get("tokenizer_class")
        if name is None:
            model_type = config.get("model_type")
            return MODEL_TYPE_TOKENIZER.get(model_type) if isinstance(model_type, str) else None
    if not isinstance(name, str):
        return None
    if not name.endswith("Fast") and f"{name}Fast" in _KNOWN_TOKENIZERS:
        return f"{name}Fast"  # use_fast: a slow name loads its fast class when there is one
    return name if name in _KNOWN_TOKENIZERS else None


def _tokenizer_file(tokenizer_config: dict) -> str | None:
    """tokenizer.json, or the newest versioned file `fast_tokenizer_files` names that 4.48.3
    may read (versions compared in string order, as the reference does); None where the
    reference raises."""
    from packaging.version import InvalidVersion, Version

    if "fast_tokenizer_files" not in tokenizer_config:
        return "tokenizer.json"
    by_version: dict[str, str] = {}
    try:
        for file_name in tokenizer_config["fast_tokenizer_files"]:
            found = _VERSIONED_TOKENIZER.search(file_name)
            if found is not None:
                by_version[found.group(1)] = file_name
        chosen = "tokenizer.json"
        for version in sorted(by_version):
            if Version(version) > Version(_TRANSFORMERS_VERSION):
                break
            chosen = by_version[version]
    except (TypeError, InvalidVersion):
        return None
    return chosen


def _reference_tokenizer_files(root: Path, config: dict) -> list[str]:
    """The files `AutoTokenizer.from_pretrained` asks for. It reads tokenizer_config.json
    first: if that does not parse, or no class can be found, nothing else is fetched."""
    asked = ["tokenizer_config.json"]
    tokenizer_config: object = {}
    if (root / "tokenizer_config.json").is_file():
        try:
            tokenizer_config = read_small_json(root / "tokenizer_config.json")
        except ValueError:
            return asked
    if not isinstance(tokenizer_config, dict):
        return asked
    auto_map = tokenizer_config.get("auto_map", {})
    if not isinstance(auto_map, (dict, list)):
        return asked  # the reference calls .get on it and fails
    name = _tokenizer_class(tokenizer_config, config)
    if name is None:
        return asked
    if name in _UNSUPPORTED_TOKENIZERS:
        raise _unsupported(name, "a tokenizer class whose files we cannot reproduce")
    tokenizer_file = _tokenizer_file(tokenizer_config)
    if tokenizer_file is None:
        return asked
    vocab = [f for f in TOKENIZER_VOCAB_FILES[name] if f != "tokenizer.json"]
    return [*vocab, *_TOKENIZER_EXTRAS, tokenizer_file]


def reference_files(snapshot_dir: str | Path) -> list[str]:
    """The files of a snapshot the reference's download fetches, in hashing order.

    config.json; the weights (`reference_weight_files`); generation_config.json; the
    tokenizer's files: the class named by tokenizer_config.json's `tokenizer_class` (a slow
    name loads its fast class), else by config.json's, else the one config.json's
    `model_type` selects; that class's vocabulary files, added_tokens.json,
    special_tokens_map.json, tokenizer_config.json, chat_template.jinja and tokenizer.json
    (or the versioned file `fast_tokenizer_files` selects). An unknown class, or a
    tokenizer_config.json that does not parse, leaves only tokenizer_config.json. Each file
    counts only if present.

    Raises:
        ModelRejected: the reference's download fails: `bad_config` (config.json missing or
            not a JSON object), the weight reasons of `reference_weight_files`,
            `duplicate_files` (two fetched files with equal bytes: the reference's download
            crashes moving their shared blob), `unsupported_file`.
    """
    root = Path(snapshot_dir)
    if not (root / "config.json").is_file():
        raise ModelRejected("config.json is missing", reason="bad_config")
    try:
        config = read_small_json(root / "config.json")
    except ValueError as exc:
        raise ModelRejected(f"config.json does not parse: {str(exc)[:200]}", reason="bad_config") from None
    if not isinstance(config, dict):
        raise ModelRejected("config.json is not a JSON object", reason="bad_config")
    asked = ["config.json", *reference_weight_files(root), "generation_config.json"]
    asked += _reference_tokenizer_files(root, config)
    for name in asked:
        if not is_allowed_file(name):
            raise _unsupported(name, "a file a tokenizer class reads")
    return sorted({name for name in asked if (root / name).is_file()})


def _digests(folder: Path, names: list[str], *, unique: bool) -> list[bytes]:
    digests = [sha256_file(folder / name) for name in names]
    if unique and len(set(digests)) != len(digests):
        first = {}
        for name, digest in zip(names, digests, strict=True):
            if digest in first:
                raise ModelRejected(
                    f"{first[digest]} and {name} hold the same bytes: the reference's download "
                    "crashes on that (one shared blob, moved twice)",
                    reason="duplicate_files",
                    files=(first[digest], name),
                )
            first[digest] = name
    return digests


def hashed_files(snapshot_dir: str | Path, *, file_set: str = NEXT.hashing.file_set) -> list[str]:
    """The names `content_hash` covers, in order (see the module docstring).

    Raises:
        NotADirectoryError: `snapshot_dir` is not a folder.
        ModelRejected: under the reference file set, as `reference_files`.
    """
    folder = Path(snapshot_dir)
    if not folder.is_dir():
        raise NotADirectoryError(f"not a model folder: {folder}")
    if file_set == "reference":
        return reference_files(folder)
    return [p.name for p in allowed_files_in(folder)]


def content_hash(snapshot_dir: str | Path, *, file_set: str = NEXT.hashing.file_set) -> str:
    """Hash of a snapshot's files of the given file set.

    For each file in order, base64(SHA-256(file bytes)) is fed into one outer SHA-256; the
    result is base64 of the outer digest (44 characters).

    Args:
        snapshot_dir: folder holding the downloaded (or about to be uploaded) model.
        file_set: ``allowed`` (ours) or ``reference`` (`HashRules.file_set`).

    Returns:
        The 44-character base64 content hash.

    Raises:
        NotADirectoryError: `snapshot_dir` is not a folder.
        ModelRejected: under the reference file set, where the reference's download fails
            (see `reference_files`, `duplicate_files` included).
    """
    folder = Path(snapshot_dir)
    names = hashed_files(folder, file_set=file_set)
    outer = hashlib.sha256()
    for digest in _digests(folder, names, unique=file_set == "reference"):
        outer.update(base64.b64encode(digest))
    return base64.b64encode(outer.digest()).decode("ascii")


def secure_hash(content_hash: str, hotkey: str) -> str:
    """Bind a content hash to the hotkey that commits it: base64(SHA-256(utf8(hash + hotkey)))."""
    digest = hashlib.sha256((content_hash + hotkey).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


__all__ = [
    "MODEL_TYPE_TOKENIZER",
    "TOKENIZER_VOCAB_FILES",
    "content_hash",
    "hashed_files",
    "reference_files",
    "reference_weight_files",
    "secure_hash",
]
