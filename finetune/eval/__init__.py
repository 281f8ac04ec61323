"""finetune.eval"""
