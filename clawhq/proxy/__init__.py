"""ClawHQ in the path of its agents' traffic: each owner reaches their agent's gateway (its
Control UI, WebChat, WebSocket and chat API) through ClawHQ, never directly.

- :mod:`.upstreams`: which gateway a request is for, and whether it may go there;
- :mod:`.headers`: what crosses the proxy in each direction, and what never does;
- :mod:`.http` and :mod:`.websocket`: the two ways traffic passes, streamed, with limits;
- :mod:`.activity`: proxied traffic keeps the agent's ``lastActiveAt`` current.
"""
