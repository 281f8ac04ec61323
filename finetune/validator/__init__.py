"""finetune.validator"""
