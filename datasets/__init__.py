"""wmkit.datasets"""
