"""finetune.storage"""
