"""finetune.mining"""
