"""finetune.chain"""
