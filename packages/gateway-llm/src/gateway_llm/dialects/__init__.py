"""The dialects of the translation hub: Chat Completions, Responses and Anthropic Messages,
each one module exposing one object that implements `gateway_llm.hub.dialect.Dialect`."""
