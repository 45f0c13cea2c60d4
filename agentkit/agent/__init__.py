"""agentkit.agent"""
