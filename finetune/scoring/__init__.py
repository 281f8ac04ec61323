"""finetune.scoring"""
