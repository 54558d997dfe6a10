"""wmkit.manifests"""
