import pytest

from finetune.datasets import ifeval as k
from finetune.datasets.ifeval import V2_KINDS, generate_ifeval
from finetune.datasets.samples import IfEvalRule
from finetune.errors import ConfigError, UnknownIdError
from finetune.eval.ifeval_rules import (
    RULE_CHECKERS,
    check_rule,
    count_satisfied,
    count_words,
    split_sentences,
)
from finetune.eval.methods.if_eval import question_rules

R = IfEvalRule
TWENTY_FIVE = " ".join(["word"] * 25)

# (rule, responses that pass, responses that fail)
CASES = [
    (R(k.WORDS_AT_MOST, n=25), [TWENTY_FIVE, "Short answer.", ""], [TWENTY_FIVE + " more"]),
    (R(k.WORDS_AT_LEAST, n=25), [TWENTY_FIVE, TWENTY_FIVE + " extra"], [" ".join(["w"] * 24)]),
    (R(k.SENTENCES_AT_MOST, n=2), ["One. Two!", "Dr. Who wins, e.g. today."], ["A. B. C."]),
    (R(k.SENTENCES_AT_LEAST, n=2), ["It is. So it is.", "Why? Because."], ["Pi is 3.14 today."]),
    (R(k.ALL_UPPER), ["PARIS IS 1ST!", "ÉTÉ"], ["Paris", "123 ...", ""]),
    (R(k.ALL_LOWER), ["paris is 1st!", "été"], ["paris is in France", "42", ""]),
    (R(k.NO_COMMAS), ["No commas here.", ""], ["Yes, one comma."]),
    (
        R(k.KEYWORD_INCLUDED, keyword="paris"),
        ["I love PARIS.", "Paris's streets", "(paris)"],
        ["Parisian food", "pari s", ""],
    ),
    (
        R(k.KEYWORD_EXACTLY, n=2, keyword="blue"),
        ["Blue sky, blue sea.", "blue-green and blue"],
        ["blue", "blue blue blue", "bluebell bluebird"],
    ),
    (
        R(k.KEYWORD_FORBIDDEN, keyword="blue"),
        ["The sky is azure.", "bluebell"],
        ["It is BLUE.", "sky: blue"],
    ),
    (
        R(k.BULLETS_EXACTLY, n=2),
        ["Intro\n* one\n  * two", "* a\n* b\n**bold** line", "* a\n* b\n- c"],
        ["* one", "* a\n* b\n* c", "*a\n*b", "- a\n- b"],
    ),
    (
        R(k.CLOSING_PHRASE, phrase="I hope this helps."),
        ["Paris. I hope this helps.", "PARIS. I HOPE THIS HELPS.  \n"],
        ["I hope this helps. Bye.", "I hope this helps", "Paris."],
    ),
    (R(k.QUOTATION), ['"Paris."', '  "a"\n', '"""'], ['"', "Paris", '"Paris', 'Paris"']),
]


@pytest.mark.parametrize(("rule", "passes", "fails"), CASES, ids=[c[0].kind for c in CASES])
def test_rule_on_hand_written_responses(rule, passes, fails):
    for response in passes:
        assert check_rule(rule, response), (rule, response)
    for response in fails:
        assert not check_rule(rule, response), (rule, response)


def test_every_kind_has_a_checker_and_a_case():
    assert set(RULE_CHECKERS) == set(V2_KINDS)
    assert {c[0].kind for c in CASES} == set(V2_KINDS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("Hello world", ["Hello world"]),
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Pi is about 3.14. It never ends.", ["Pi is about 3.14.", "It never ends."]),
        ("Mr. Smith met Dr. Jones.", ["Mr. Smith met Dr. Jones."]),
        ("Use fruit, e.g. apples. Or i.e. pears.", ["Use fruit, e.g. apples.", "Or i.e. pears."]),
        ("Wait... then go. Fine... Done.", ["Wait... then go.", "Fine...", "Done."]),
        ("Really?! Yes.", ["Really?!", "Yes."]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("* first item\n* second item\n", ["* first item", "* second item"]),
        ("... !!! ?", []),
        ("Version 2.0.1 is out.", ["Version 2.0.1 is out."]),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_count_words():
    assert count_words("") == 0
    assert count_words("Don't stop, well-known 3.14 things!") == 6
    assert count_words("  many   spaces\nand lines ") == 4


def test_count_satisfied():
    rules = (R(k.ALL_LOWER), R(k.NO_COMMAS), R(k.WORDS_AT_LEAST, n=25), R(k.QUOTATION))
    assert count_satisfied(rules, '"paris is nice"') == 3
    assert count_satisfied(rules, "Paris, nice") == 0
    assert count_satisfied((), "anything") == 0


def test_generated_rules_are_all_checkable():
    qa = [("Q1?", "Paris is the capital."), ("Q2?", "Blue light scatters more.")]
    response = "Paris is the capital. Blue light."
    for sample in generate_ifeval(3, 200, qa):
        for rules in question_rules(sample):
            satisfied = count_satisfied(rules, response)
            assert satisfied == sum(check_rule(rule, response) for rule in rules)
            assert 0 <= satisfied <= len(rules)


def test_unknown_kind_and_missing_arguments():
    with pytest.raises(UnknownIdError, match="Did you mean 'no_commas'"):
        check_rule(R("no_comas"), "text")
    with pytest.raises(ConfigError):
        check_rule(R(k.WORDS_AT_MOST), "text")
    with pytest.raises(ConfigError):
        check_rule(R(k.KEYWORD_INCLUDED), "text")
    with pytest.raises(ConfigError):
        check_rule(R(k.CLOSING_PHRASE), "text")


# --- fixes to our rules (both protocols draw with them; `next` checks with them) ------------


def test_underscore_does_not_glue_a_word_to_the_keyword():
    rule = R(k.KEYWORD_INCLUDED, keyword="world")
    assert check_rule(rule, "hello_world") and check_rule(rule, "_world_")
    assert not check_rule(rule, "worldly") and not check_rule(rule, "world2")
    assert check_rule(R(k.KEYWORD_EXACTLY, n=2, keyword="blue"), "blue_sky and blue")


@pytest.mark.parametrize("text", ["中文回答", "123 456", "😀😀", "ǅ", ""])
def test_text_without_cased_letters_is_neither_upper_nor_lower(text):
    assert not check_rule(R(k.ALL_UPPER), text) and not check_rule(R(k.ALL_LOWER), text)


def test_cased_letters_decide_beside_uncased_ones():
    assert check_rule(R(k.ALL_UPPER), "中文 OK") and not check_rule(R(k.ALL_LOWER), "中文 OK")
    assert check_rule(R(k.ALL_LOWER), "中文 ok") and not check_rule(R(k.ALL_UPPER), "中文 ok")
    assert not check_rule(R(k.ALL_LOWER), "ǅ titlecase")  # a titlecase letter breaks both


@pytest.mark.parametrize(
    ("text", "words"),
    [("U.S. is a country.", 4), ("i.e. that one", 3), ("at 5 a.m. sharp", 4),
     ("The U.S.A. won.", 3), ("e.g. this", 2), ("Hello.World. Again", 3), ("3.14 and 1,000", 3)],
)
def test_abbreviations_with_inner_dots_are_one_word(text, words):
    assert count_words(text) == words


def test_each_question_is_asked_about_a_keyword_of_its_own_answer():
    qa = [("Q1?", "Sunlight, water and carbon dioxide."),
          ("Q2?", "Rayleigh scattering of sunlight by molecules."),
          ("Q3?", "Jupiter is the largest planet.")]
    samples = generate_ifeval(seed=5, count=300, qa_pairs=qa)
    keyword_rules = 0
    for sample in samples:
        own = [set(k.extract_keywords(answer)) for answer in sample.answers]
        for index, rules in enumerate(question_rules(sample)):
            for rule in rules:
                if rule.kind in k.KEYWORD_KINDS:
                    keyword_rules += 1
                    assert rule.keyword in own[index], (sample.answers, rule)
    assert keyword_rules > 100  # answers with no word in common still get keyword rules
