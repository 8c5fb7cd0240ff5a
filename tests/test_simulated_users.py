"""The assistant example's simulated users react to a response as its table says."""

from dataflywheel.data.simulated_users import names_topic, react


def test_topic_questions() -> None:
    assert react("topic", "sport", ["sport", "Sports."]) == {"thumbs": "up", "choice_index": 0}
    assert react("topic", "tech", ["business", "tech"]) == {"choice": 1}
    assert react("topic", "politics", ["tech", "business"]) == {"correction": "politics", "choice_index": 0}
    assert names_topic("Sports news", "sport") and not names_topic("the tech sector", "business")


def test_headline_questions() -> None:
    title = "Google shares rise on strong results"
    assert react("headline", title, ["Cats", "Google shares rise on results"]) == {"rating": 5, "choice_index": 1}
    assert react("headline", title, ["Results today", "Weather"]) == {"choice": 0}
    assert react("headline", title, ["Weather", "Sunny"]) == {"correction": title, "choice_index": 0}
