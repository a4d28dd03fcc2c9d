"""Scoring the built-in models on data their training generators never drew (issue: models that
hold on unseen data). The generators here share no drawing code with train/; nothing in train/
imports this package."""
