"""wmkit.model"""
