"""``python -m bt_lstm.freqai``: print the folder to pass as freqtrade's --freqaimodel-path."""
from bt_lstm.freqai import freqaimodel_path

print(freqaimodel_path())
