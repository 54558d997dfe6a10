"""wmkit.render"""
