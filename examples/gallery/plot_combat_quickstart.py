"""
Harmonize a multi-site feature table with ComBat
================================================

A consortium pools radiomic features from four sites. Each site's scanner shifts and scales
the features; age and sex have real effects that harmonization must keep. sitekit's synthetic
table knows the truth, so we can see both.
"""

import matplotlib.pyplot as plt

from sitekit.datasets import make_feature_table
from sitekit.harmonize import ComBat

table = make_feature_table(random_state=0)
features = [c for c in table.columns if c.startswith("original_")][:6]
print(table[["site", "age", "sex"]].groupby("site").agg(n=("age", "size"), age=("age", "mean")))

# %%
# Fit on the features, with the sites and the covariates as keyword arguments. A
# pandas DataFrame in gives a DataFrame out, with the same index and columns.
combat = ComBat(categorical=["sex"], continuous=["age"])
harmonized = combat.fit_transform(table[features], sites=table["site"],
                                  covariates=table[["age", "sex"]])
print(combat.priors_.round(3).head())

# %%
# The site means of one feature before and after: the site offsets are gone.
feature = features[0]
fig, ax = plt.subplots(figsize=(6, 3.5))
for i, (label, data) in enumerate((("raw", table[feature]), ("ComBat", harmonized[feature]))):
    means = data.groupby(table["site"]).mean()
    ax.scatter(means.index.astype(str), means.to_numpy(), label=label, marker="os"[i], s=60)
ax.set_ylabel(f"site mean of {feature}")
ax.legend()
fig.tight_layout()
