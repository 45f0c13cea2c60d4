"""agentkit.executors"""
