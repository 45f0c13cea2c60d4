"""agentkit.tools"""
