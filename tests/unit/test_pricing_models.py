from core.sessions.pricing import KNOWN_MODELS, price_for, unpriced_warning


def test_every_model_the_agent_form_offers_has_a_price():
    assert KNOWN_MODELS
    assert [m for m in KNOWN_MODELS if price_for(m) is None] == []
    assert unpriced_warning("claude-sonet-9") is not None
