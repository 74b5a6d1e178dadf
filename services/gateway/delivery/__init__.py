"""Where finished results go: result storage (a local folder or Firebase Storage), signed result
links, notifications (FCM pushes and signed webhooks) and the Firebase app they share. It may
import `net`, `domain`, `config` and `metrics`, and nothing that runs or serves a job.
"""
