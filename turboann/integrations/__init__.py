"""Stores for RAG frameworks, each an optional extra: documents and metadata in SQLite, vectors in turboann.

    turboann.integrations.langchain    TurboannVectorStore (LangChain VectorStore), pip install turboann[langchain]
    turboann.integrations.llama_index  TurboannVectorStore (LlamaIndex BasePydanticVectorStore), turboann[llama-index]
    turboann.integrations.haystack     TurboannDocumentStore, TurboannEmbeddingRetriever, turboann[haystack]

Nothing is imported here, so that importing one store never needs another framework.
"""
