"""wmkit.train"""
