"""agentkit.adapters"""
