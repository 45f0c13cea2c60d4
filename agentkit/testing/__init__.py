"""agentkit.testing"""
