"""finetune.datasets"""
