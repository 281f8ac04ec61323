"""The published expert lists of the merging competitions (SPEC §9), as data.

A merge names its experts by repo and revision (and each one's licence) in its
`submission.json`; validators reject an expert off the list (`unlisted_expert`) or a licence
that is not research-compatible (`bad_license`). `scripts/merge_models.py --experts NAME|FILE`
merges the experts of a list: a competition's name takes its published list (the one its
`SubmissionRules.experts` hold), a FILE holds one in the same JSON form (`ExpertList`).
"""

from __future__ import annotations

from finetune.competition import Expert, ExpertList

# Licences compatible with research use (the seed: "e.g. MIT, Apache 2"), as the Hub tags them.
RESEARCH_LICENSES = (
    "apache-2.0",
    "mit",
    "bsd-2-clause",
    "bsd-3-clause",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "llama2",
    "llama3",
    "llama3.1",
    "gemma",
)

# MERGE_GENERALIST: one base and its fine-tunes (task arithmetic, TIES and DARE need the
# shared base; linear and SLERP merge the experts alone). An illustrative list of one family
# under Apache 2.0; the seed's organisers published theirs with the starter kit. No revision
# is pinned here (this project cannot check one offline): whoever runs the competition pins
# them, and a validator then rejects any other revision (`unlisted_expert`).
MERGE_GENERALIST_BASE = Expert(repo="Qwen/Qwen2.5-7B", revision=None, license="apache-2.0", skill="base")
MERGE_GENERALIST_EXPERTS = (
    Expert(repo="Qwen/Qwen2.5-7B-Instruct", revision=None, license="apache-2.0", skill="chat, reasoning"),
    Expert(repo="Qwen/Qwen2.5-Math-7B", revision=None, license="apache-2.0", skill="math"),
    Expert(repo="Qwen/Qwen2.5-Coder-7B", revision=None, license="apache-2.0", skill="code"),
)

# LOCAL_MERGING: the devnet's tiny experts (the seeds demo trains them from one tiny base and
# pushes them to its directory hub). No fixed revision: every demo run rebuilds them.
LOCAL_MERGING_BASE = Expert(repo="experts/tiny-base", revision=None, license="apache-2.0", skill="base")
LOCAL_MERGING_EXPERTS = (
    Expert(repo="experts/tiny-boolq", revision=None, license="apache-2.0", skill="yes/no questions"),
    Expert(repo="experts/tiny-mawps", revision=None, license="apache-2.0", skill="word problems"),
)

LOCAL_MERGING_LIST = ExpertList(competition="LOCAL_MERGING", base=LOCAL_MERGING_BASE,
                                experts=LOCAL_MERGING_EXPERTS)


__all__ = [
    "LOCAL_MERGING_BASE",
    "LOCAL_MERGING_LIST",
    "LOCAL_MERGING_EXPERTS",
    "MERGE_GENERALIST_BASE",
    "MERGE_GENERALIST_EXPERTS",
    "RESEARCH_LICENSES",
]
