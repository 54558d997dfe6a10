"""wmkit.annotate"""
