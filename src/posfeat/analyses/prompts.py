"""Prompts: type a text and see which features fire on each token, exactly.

At layer 0 the SAE's input at position ``p`` holding token ``t`` is exactly ``W_E[t] + W_pos[p]``,
whatever the rest of the text: so the features of a prompt need no forward pass through the model,
only its tokenizer and the two embedding tables. :func:`prompt` tokenises the text with the model's
own tokenizer, encodes every (token, position) input with the SAE, and lists each token's active
features with their activations, marking the positional ones (classified exactly over the whole
grid, as ``posfeat analyze`` does) and the positions past the SAE's training context.

A :class:`Prompt` is a DataFrame in Python (:attr:`Prompt.table`), a coloured view in a notebook
(tokens shaded by one chosen feature, as SAEDashboard shows them; drawn by ``posfeat.outputs``) and
a table in the terminal (:meth:`Prompt.lines`, what ``posfeat prompt`` prints).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, arg
from ..core.sae import SAE, sae_context
from ..core.tensors import to_numpy
from ..engine.grid_stats import feature_stats
from ..io.checkpoints import BUNDLED_MODEL, MODEL_ALIASES, bundled_model_dir
from ..io.hub import cached_file
from ..io.names import BUNDLED_SAE
from ..io.sources import as_pair
from ..io.tokens import read_tokenizer
from .classification import classify
from .prompt_view import prompt_html

#: Columns of :attr:`Prompt.table`: one row per (position, active feature), strongest first within a
# position.
PROMPT_COLUMNS = [
    "position",
    "token_id",
    "token",
    "in_context",
    "rank",
    "feature",
    "activation",
    "kind",
    "positional",
]
#: Columns of :attr:`Prompt.tokens`: one row per position.
TOKEN_COLUMNS = [
    "position",
    "token_id",
    "token",
    "in_context",
    "n_active",
    "top_feature",
    "top_activation",
]
_BOS = ("<|endoftext|>", "<s>", "[CLS]", "<bos>")


@dataclass
class Prompt:
    """The features of one text, token by token (see module docstring).

    Attributes:
        text: the text as given (None when token ids were given).
        token_ids: ``[n]`` token id at each position ``0..n-1``.
        token_strs: readable string of each token.
        activations: ``[n, d_sae]`` every feature's activation at every position (float32, exact
            encoder output).
        kinds: ``[d_sae]`` kind of each feature (positional, semantic, mixed, dead), "" where not
            classified.
        context: the SAE's training context; positions at or past it are marked.
        top: features listed per token (None: all active).
        feature: the feature the notebook view colours tokens by.
        model: the model's name, for labels.
        sae: the SAE's name, for labels.
        notes: lines printed after the table (why the features are not classified, for a TopK SAE).
    """

    text: str | None
    token_ids: np.ndarray
    token_strs: list[str]
    activations: np.ndarray
    kinds: np.ndarray
    context: int
    top: int | None
    feature: int | None
    model: str = ""
    sae: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def in_context(self) -> np.ndarray:
        """``[n]`` True where the position is within the SAE's training context."""
        return np.arange(self.n_tokens) < self.context

    @property
    def table(self) -> pd.DataFrame:
        """One row per (position, active feature), columns :data:`PROMPT_COLUMNS`; at most ``top``
        features per position."""
        rows = []
        for p in range(self.n_tokens):
            for rank, f in enumerate(self.ranked(p)):
                kind = str(self.kinds[f])
                rows.append(
                    (
                        p,
                        int(self.token_ids[p]),
                        self.token_strs[p],
                        bool(p < self.context),
                        rank,
                        int(f),
                        float(self.activations[p, f]),
                        kind,
                        kind == "positional",
                    )
                )
        return pd.DataFrame(rows, columns=PROMPT_COLUMNS)

    @property
    def tokens(self) -> pd.DataFrame:
        """One row per position, columns :data:`TOKEN_COLUMNS` (``top_feature`` -1 where none
        fires)."""
        act = self.activations
        n_active = (act > 0).sum(1)
        best = act.argmax(1) if act.shape[1] else np.zeros(self.n_tokens, dtype=int)
        top_act = act[np.arange(self.n_tokens), best] if act.shape[1] else np.zeros(self.n_tokens)
        return pd.DataFrame(
            {
                "position": np.arange(self.n_tokens),
                "token_id": self.token_ids,
                "token": self.token_strs,
                "in_context": self.in_context,
                "n_active": n_active,
                "top_feature": np.where(n_active > 0, best, -1),
                "top_activation": np.where(n_active > 0, top_act, 0.0),
            }
        )[TOKEN_COLUMNS]

    def ranked(self, position: int) -> np.ndarray:
        """Features active at ``position``, strongest first (ties by feature index), at most
        ``top``."""
        a = self.activations[position]
        active = np.flatnonzero(a > 0)
        order = active[np.lexsort((active, -a[active]))]
        return order if self.top is None else order[: self.top]

    def colour(self, feature: int) -> Prompt:
        """The same prompt, its notebook view coloured by ``feature``."""
        if not 0 <= int(feature) < self.activations.shape[1]:
            raise PosfeatError(
                f"Feature {feature} is not in this SAE (0..{self.activations.shape[1] - 1}); pick "
                "an existing feature."
            )
        return dataclasses.replace(self, feature=int(feature))

    def lines(self) -> list[str]:
        """The terminal table: one line per token with its features (``P`` = positional),
        past-context positions starred."""
        n_pos, n_known = int((self.kinds == "positional").sum()), int((self.kinds != "").sum())
        head = (
            f"{self.model} x {self.sae}: {self.n_tokens} tokens; activations of the "
            f"{'active' if self.top is None else f'top {self.top} active'} features per token, P = "
            "positional "
            f"({n_pos} of the {n_known} features classified over the whole grid are positional)"
        )
        width = max([5, *(len(repr(s)) for s in self.token_strs)])
        out = [head, f"{'pos':>5}  {'token':<{width}}  features"]
        for p in range(self.n_tokens):
            feats = ", ".join(
                f"#{int(f)} {self.activations[p, f]:.3g}"
                + (" P" if self.kinds[f] == "positional" else "")
                for f in self.ranked(p)
            )
            n_all = int((self.activations[p] > 0).sum())
            more = f" (+{n_all - len(self.ranked(p))} more)" if n_all > len(self.ranked(p)) else ""
            star = "*" if p >= self.context else " "
            out.append(
                f"{p:>4}{star}  {self.token_strs[p]!r:<{width}}  {feats or '(none active)'}{more}"
            )
        if self.n_tokens > self.context:
            out.append(
                f"* position {self.context} and later are past the SAE's training context ("
                f"{self.context} positions): "
                "its features there are extrapolations."
            )
        return [*out, *self.notes]

    def html(self, feature: int | None = None) -> str:
        """The coloured view (tokens shaded by ``feature``, default :attr:`feature`) as an HTML
        fragment."""
        return prompt_html(self, self.feature if feature is None else int(feature))

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return f"Prompt({self.n_tokens} tokens, {self.model} x {self.sae}, colour feature {self.feature})"

    def __str__(self) -> str:
        """The terminal table (``print(pr)``), as ``posfeat prompt`` prints it."""
        return "\n".join(self.lines())


def tokenizer_for(emb: Embeddings, model: Any = None) -> Any:
    """The model's own tokenizer: the object's (``model.tokenizer``), else ``tokenizer.json`` of
    where the embeddings were loaded from (without the padding and truncation a ``tokenizer.json``
    may switch on: a prompt is read as it is)."""
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        return tok
    load_as = emb.info.get("load_as")
    if not load_as:
        return None
    if load_as == BUNDLED_MODEL:
        tok = read_tokenizer(bundled_model_dir() / "tokenizer.json")
    elif Path(load_as).is_dir():
        tok = read_tokenizer(Path(load_as) / "tokenizer.json")
    else:
        tok = read_tokenizer(
            cached_file(MODEL_ALIASES.get(load_as, load_as), "tokenizer.json", required=False)
        )
    if tok is not None:
        tok.no_padding()
        tok.no_truncation()
    return tok


def _bos_id(tokenizer: Any) -> int | None:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        return int(bos)
    if hasattr(tokenizer, "token_to_id"):
        for s in _BOS:
            if (i := tokenizer.token_to_id(s)) is not None:
                return int(i)
    return None


def tokenize(
    tokenizer: Any, text: str, *, special_tokens: bool = True, prepend_bos: bool = False
) -> list[int]:
    """Token ids of ``text`` by a ``tokenizers.Tokenizer`` or a transformers tokenizer, as the model
    would see it."""
    enc = tokenizer.encode(text, add_special_tokens=special_tokens)
    ids = [int(i) for i in (enc.ids if hasattr(enc, "ids") else enc)]
    mask = getattr(enc, "attention_mask", None)
    if mask is not None and len(mask) == len(
        ids
    ):  # a tokenizer.json that pads (all-MiniLM-L6-v2 pads to 128): drop the padding
        ids = [i for i, m in zip(ids, mask) if m]
    if prepend_bos:
        bos = _bos_id(tokenizer)
        if bos is None:
            raise PosfeatError(
                "The tokenizer has no beginning-of-sequence token to prepend; pass "
                f"{arg('prepend_bos', False)}."
            )
        if not ids or ids[0] != bos:
            ids = [bos, *ids]
    return ids


def _kinds(
    emb: Embeddings, sae: SAE, active: np.ndarray, context: int
) -> tuple[np.ndarray, list[str]]:
    """Kinds of the ``active`` features, exact over the whole grid within the context (``""``
    elsewhere)."""
    kinds = np.full(sae.d_sae, "", dtype=object)
    if not len(active):
        return kinds, []
    if not sae.separable:
        return kinds, [
            "(TopK SAE: features are not classified here; an Analysis classifies them: "
            "analyze(...).prompt(text).)"
        ]
    st = feature_stats(emb, sae.subset(torch.as_tensor(active)), range(context))
    kinds[active] = classify(st)
    return kinds, []


def prompt(
    pair: Any,
    text: str | list[int],
    *,
    top: int | None = 10,
    feature: int | None = None,
    tokenizer: Any = None,
    special_tokens: bool = True,
    prepend_bos: bool | None = None,
    kinds: np.ndarray | None = None,
) -> Prompt:
    """The features that fire on each token of ``text`` (see module docstring).

    Args:
        pair: ``(model, sae)``: anything :func:`posfeat.load_pair` accepts (names, folders, model
            objects, :class:`Embeddings` and :class:`SAE`), or an :class:`Analysis` (whose
            classification is reused).
        text: the text, or its token ids.
        top: features listed per token (None: every active one).
        feature: the feature the notebook view colours tokens by (default the strongest
            non-positional one).
        tokenizer: a ``tokenizers.Tokenizer`` or transformers tokenizer (default the model's own).
        special_tokens: let the tokenizer add its special tokens (BERT's ``[CLS]`` ... ``[SEP]``),
            as the model sees them.
        prepend_bos: put the tokenizer's beginning-of-sequence token first (default: as the SAE's
            config says it was trained, ``prepend_bos``; else no).
        kinds: ``[d_sae]`` feature kinds to use (an Analysis passes its own).
    """
    if hasattr(pair, "emb") and hasattr(pair, "features") and hasattr(pair, "sae"):
        model, emb, sae = None, pair.emb, pair.sae
        kinds = pair.features.kind.to_numpy() if kinds is None else kinds
    else:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise PosfeatError(
                f"pair is a {type(pair).__name__}; pass (model, sae) or an Analysis."
            )
        model, s = pair
        emb, sae = as_pair(model, BUNDLED_SAE if s is None else s)
    if top is not None and (
        isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1
    ):
        raise PosfeatError(f"{arg('top', top)} must be a positive whole number.")
    if isinstance(text, str):
        tok = tokenizer if tokenizer is not None else tokenizer_for(emb, model)
        if tok is None:
            raise PosfeatError(
                f"Model {emb.name} came without a tokenizer; pass tokenizer= (a "
                "tokenizers.Tokenizer or transformers "
                "tokenizer) or the token ids instead of the text."
            )
        bos = (
            bool(
                sae.cfg.get(
                    "prepend_bos", (sae.cfg.get("metadata") or {}).get("prepend_bos", False)
                )
            )
            if prepend_bos is None
            else bool(prepend_bos)
        )
        ids = tokenize(tok, text, special_tokens=special_tokens, prepend_bos=bos)
    else:
        ids = [int(i) for i in text]
    if not ids:
        raise PosfeatError("The text has no tokens; give a non-empty text.")
    bad = [i for i in ids if not 0 <= i < emb.d_vocab]
    if bad:
        raise PosfeatError(
            f"Token id {bad[0]} is outside the vocabulary of {emb.name} (0..{emb.d_vocab - 1}); use "
            "the model's tokenizer."
        )
    if len(ids) > emb.n_ctx:
        raise PosfeatError(
            f"The text is {len(ids)} tokens but {emb.name} has {emb.n_ctx} positions; shorten it to "
            f"at most {emb.n_ctx} tokens."
        )
    context = sae_context(sae, emb.n_ctx)
    with torch.no_grad():
        pos = torch.arange(len(ids), device=emb.device)
        acts = to_numpy(
            sae.encode(emb.inputs(torch.as_tensor(ids, device=emb.device), pos)), np.float32
        )
    active = np.flatnonzero((acts > 0).any(0))
    notes: list[str] = []
    if kinds is None:
        kinds, notes = _kinds(emb, sae, active, context)
    kinds = np.asarray(kinds, dtype=object)
    if feature is None:
        strength = (
            np.where(kinds[active] == "positional", -1.0, acts[:, active].max(0))
            if len(active)
            else np.array([])
        )
        feature = int(active[int(np.argmax(strength))]) if len(active) else 0
    pr = Prompt(
        text if isinstance(text, str) else None,
        np.asarray(ids, dtype=np.int64),
        [emb.token_str(i) for i in ids],
        acts,
        kinds,
        context,
        None if top is None else int(top),
        None,
        emb.name,
        sae.name,
        notes,
    )
    return pr.colour(feature)
