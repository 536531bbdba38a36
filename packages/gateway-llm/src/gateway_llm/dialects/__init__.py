"""The dialects of the translation hub: Chat Completions, Responses, Anthropic Messages,
legacy completions and embeddings, each one module exposing one object that implements
`gateway_llm.hub.dialect.Dialect`. Import the module you need (``gateway_llm.dialects.chat``)."""

__all__: list[str] = []
