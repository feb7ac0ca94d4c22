"""ClawHQ's LLM gateway: agents reach their model provider through ClawHQ, which holds the keys and meters every token."""  # noqa: E501
