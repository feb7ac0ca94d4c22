"""Use cases over the data layer: users and tokens, agents, webhooks. Each owns its transaction."""
