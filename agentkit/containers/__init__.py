"""agentkit.containers"""
