"""agentkit.workspaces"""
