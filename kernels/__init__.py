"""wmkit.kernels"""
